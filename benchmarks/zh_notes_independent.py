"""Chinese clinical documents with gold spans, written without reading the scrubber.

This generator was written (and committed) before its author opened the scrubber's
recognisers, the name model, the scrub technique or the older generator
(benchmarks/zh_clinical_docs.py). It is the independent test set asked for by issue 15.

    .venv/bin/python benchmarks/zh_notes_independent.py --split dev --n 3 --show

Three splits, each a fixed seed:

* ``dev``  — may be read, measured and tuned on as often as needed.
* ``eval`` — measured exactly once, at the end of the work, with the scrubber frozen. Its
  failures are never read before that measurement; after it, a small slice runs in CI only
  to catch regressions (tests/techniques/test_notes_independent.py). Anyone who tunes on
  ``eval`` must say so and pick a new seed for a new held-out split.
* ``eval2`` — a second held-out split, added after ``eval`` had been measured once (its
  figure known, its misses unread) and the scrubber then changed on a larger ``dev`` sample.
  Same rules as ``eval``: measured once, at the end, misses never read.

Every note carries character-offset spans of

* every direct identifier, by kind (``IDENTIFIER_KINDS``); person names also carry the
  person's role (patient, doctor, nurse, technician, relative, guardian) and the written form
  of the name (common, compound surname, rare surname, minority name with ·, spaced, surname +
  title, given name of ordinary characters, faker's names);
* the ordinary content that must survive (``ORDINARY_KINDS``): drug, disease and eponym
  names, lab values with units, doses, ICD-10 codes, department and hospital names, and
  clinical phrases that look like names (安返病房, 主任医师查体, 生命体征平稳, 和缓, 有无 …).

Documents come in sixteen kinds (门诊病历 … 死亡记录) and six writing styles: terse
templates, free narrative, tables (｜ or tab), OCR-like spacing, full-width digits and
punctuation, and English abbreviations mixed in. Only the standard library and faker (zh_CN)
are used.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import string
from dataclasses import asdict, dataclass, field
from typing import Iterator

from faker import Faker

SPLIT_SEEDS = {"dev": 20261205, "eval": 90417733, "eval2": 26034969}

IDENTIFIER_KINDS = (
    "name", "id_card", "mobile", "landline", "email", "address", "postcode", "passport",
    "travel_permit", "wechat", "qq", "plate", "ip", "employer", "record_number",
    "bank_card", "insurance_card", "birth_date", "age_over_89", "url",
)
ORDINARY_KINDS = (
    "drug", "disease", "eponym", "lab_value", "dose", "icd10", "department", "hospital",
    "phrase",
)
NAME_ROLES = ("patient", "doctor", "nurse", "technician", "relative", "guardian")
DOCUMENT_KINDS = (
    "门诊病历", "出院小结", "入院记录", "检验报告", "影像报告", "病理报告", "护理记录",
    "会诊意见", "转诊单", "手术记录", "麻醉记录", "随访记录", "知情同意书", "处方",
    "体检报告", "死亡记录",
)
STYLES = ("terse", "narrative", "table", "ocr", "fullwidth", "english")


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str
    text: str
    role: str | None = None  # names: whose name
    form: str | None = None  # names: how written; record numbers: which label


@dataclass
class Note:
    note_id: str
    document: str
    style: str
    text: str
    identifiers: list[Span] = field(default_factory=list)
    ordinary: list[Span] = field(default_factory=list)


# ---------------------------------------------------------------------------- vocabulary

COMMON_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶"
    "程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾"
    "毛郝龚邵万钱严覃武戴莫孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关"
    "兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻"
    "祁蒲房滕屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦麦褚娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿"
    "桂全佟应臧闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝"
)
COMPOUND_SURNAMES = (
    "欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "令狐", "慕容", "尉迟", "公孙", "夏侯",
    "端木", "长孙", "宇文", "司徒", "西门", "南宫", "独孤", "申屠", "澹台", "轩辕", "呼延",
    "万俟", "闻人", "钟离", "赫连", "太史", "第五", "拓跋", "百里",
)
RARE_SURNAMES = "禤蒯訾仉亓厍郦晁逄笪麴隗璩佴冼钭莘昝缑满也酆暨郜郄蔺扈睢禹蹇逯揭濮阚浦琚嵇勾隽銮邸邰芮甯"
GIVEN_CHARS = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红鹏琳晶飞鑫波斌宇浩凯健俊帆帅"
    "旭宁龙林欣佳瑶婷雪倩璐颖琪璇晨阳辉博文轩睿哲昊泽瀚梓萱涵怡悦嘉子铭诗雨欣然思彤语宸一诺"
    "志国建忠德福寿春海江山云峰岩梅菊莲凤燕蓉琴爱淑慧巧美秋珍翠"
)
# Given names built from characters that are also ordinary words in clinical prose.
ORDINARY_GIVEN = (
    "春生", "建国", "月华", "和平", "有才", "安康", "生", "和", "有", "平", "文明", "国庆",
    "立新", "红军", "志刚", "长江", "永生", "明月", "秋生", "来福", "金生", "水生", "安", "康",
    "正常", "向阳", "卫东", "解放", "援朝", "胜利", "爱民", "新华", "月", "红梅", "小平",
    "有福", "和顺", "生平", "春和", "一生", "天明", "学文", "光明", "前进", "有为", "复兴",
)
MINORITY_FIRST = (
    "阿依古丽", "买买提", "古丽娜尔", "热依拉", "艾尔肯", "努尔兰", "阿布都", "迪丽娜尔",
    "帕提古丽", "吐尔逊", "艾合买提", "阿卜杜拉", "米热古丽", "巴哈尔", "叶尔兰", "哈斯木",
)
MINORITY_LAST = (
    "买买提", "吐尔逊", "艾力", "阿不都", "吐拉克", "哈力木", "热合曼", "司马义", "依明",
    "卡德尔", "吾守尔", "努尔", "托合提", "玉素甫", "阿不力孜",
)
MINORITY_UNDOTTED = (
    "扎西多吉", "次仁卓玛", "巴特尔", "其其格", "格桑旺姆", "达瓦次仁", "白玛央宗", "乌云其木格",
    "斯琴高娃", "阿古拉", "索朗平措", "德吉卓嘎",
)
DOCTOR_TITLES = ("主任", "医生", "医师", "大夫", "教授", "主任医师", "副主任", "院长", "主治")
NURSE_TITLES = ("护士", "护士长", "护师")
TECH_TITLES = ("技师", "老师", "工程师")
RELATIVE_TITLES = ("先生", "女士", "阿姨", "大爷")
RELATIONS = ("其子", "其女", "其妻", "其夫", "儿子", "女儿", "配偶", "妻子", "丈夫", "儿媳",
             "女婿", "孙子", "外孙女", "哥哥", "姐姐", "弟弟", "妹妹", "母亲", "父亲")

DRUGS = (
    "阿司匹林肠溶片", "氯吡格雷", "阿托伐他汀钙片", "瑞舒伐他汀", "二甲双胍", "甘精胰岛素",
    "门冬胰岛素", "硝苯地平控释片", "苯磺酸氨氯地平", "美托洛尔缓释片", "头孢曲松钠",
    "左氧氟沙星", "莫西沙星", "奥美拉唑", "泮托拉唑", "雷贝拉唑", "甲泼尼龙", "地塞米松",
    "呋塞米", "螺内酯", "华法林", "利伐沙班", "低分子肝素钙", "多巴胺", "丙泊酚", "瑞芬太尼",
    "舒芬太尼", "罗库溴铵", "七氟烷", "布地奈德", "沙丁胺醇", "左甲状腺素钠", "卡马西平",
    "丙戊酸钠", "多巴丝肼", "多奈哌齐", "美沙拉嗪", "他克莫司", "利妥昔单抗", "顺铂",
    "紫杉醇", "甲氨蝶呤", "布洛芬", "对乙酰氨基酚", "氨溴索", "安宫牛黄丸", "复方丹参滴丸",
    "六味地黄丸", "逍遥丸", "安定", "安络血", "平消胶囊", "文拉法辛", "白蛋白", "高锰酸钾",
    "石杉碱甲", "金水宝胶囊", "黄芪注射液", "万古霉素", "叶酸片", "甘露醇", "罗红霉素",
    "林可霉素", "何首乌", "马来酸依那普利", "苏合香丸", "柴胡注射液", "康复新液", "和胃整肠丸",
    "连花清瘟胶囊", "骨化三醇", "碳酸钙D3片", "硫酸氢氯吡格雷", "替格瑞洛", "单硝酸异山梨酯",
    "艾司唑仑", "舍曲林", "奥氮平", "胰岛素", "生理盐水", "葡萄糖注射液", "钟乳石",
)
DISEASES = (
    "2型糖尿病", "高血压病3级", "冠状动脉粥样硬化性心脏病", "慢性阻塞性肺疾病", "社区获得性肺炎",
    "脑梗死", "急性心肌梗死", "心房颤动", "慢性肾脏病5期", "肝硬化失代偿期", "胆囊结石伴慢性胆囊炎",
    "急性阑尾炎", "乳腺浸润性导管癌", "肺腺癌", "甲状腺乳头状癌", "类风湿关节炎", "系统性红斑狼疮",
    "痛风性关节炎", "骨质疏松症", "腰椎间盘突出症", "带状疱疹", "缺铁性贫血", "支气管哮喘",
    "抑郁症", "精神分裂症", "年龄相关性白内障", "原发性开角型青光眼", "高尿酸血症",
    "甲状腺功能亢进症", "急性白血病", "梗阻性黄疸", "高脂血症", "胃溃疡", "结肠息肉",
    "子宫肌瘤", "前列腺增生", "肺结核", "慢性乙型病毒性肝炎", "急性胰腺炎", "心力衰竭",
)
EPONYMS = (
    "帕金森病", "霍奇金淋巴瘤", "非霍奇金淋巴瘤", "克罗恩病", "桥本甲状腺炎", "阿尔茨海默病",
    "唐氏综合征", "吉兰-巴雷综合征", "库欣综合征", "艾迪生病", "川崎病", "雷诺现象", "马方综合征",
    "梅尼埃病", "贝尔面瘫", "巴雷特食管", "格雷夫斯病", "布加综合征", "斯蒂尔病", "白塞病",
    "尤文肉瘤", "伯基特淋巴瘤", "卡波西肉瘤", "亨廷顿病", "墨菲征", "巴宾斯基征", "麦氏点",
    "霍纳综合征", "史蒂文斯-约翰逊综合征", "法洛四联症", "威尔逊病", "科萨奇病毒",
)
EPONYM_ICD = {"帕金森病": "G20.x00", "阿尔茨海默病": "G30.900", "霍奇金淋巴瘤": "C81.900",
              "克罗恩病": "K50.900", "桥本甲状腺炎": "E06.300", "川崎病": "M30.300"}
ICD10 = (
    "I10.x00", "E11.900", "I63.900", "J44.100", "C34.900", "K80.100", "N18.500", "I48.000",
    "M05.900", "F32.900", "Z51.100", "J18.900", "C50.900", "I21.000", "G20.x00", "G30.900",
    "C81.900", "K50.900", "E06.300", "I25.103", "E78.500", "K25.900", "D25.900", "A15.000",
    "I50.900", "M81.000", "E05.900", "K85.900", "B18.100", "H25.900",
)
DEPARTMENTS = (
    "心血管内科", "神经内科", "康复医学科", "消化内科", "呼吸与危重症医学科", "普通外科", "骨科",
    "妇产科", "儿科", "急诊科", "重症医学科", "麻醉科", "病理科", "放射科", "检验科",
    "超声医学科", "肿瘤科", "内分泌科", "肾内科", "泌尿外科", "胸外科", "眼科",
    "耳鼻咽喉头颈外科", "口腔科", "皮肤科", "中医科", "精神心理科", "老年医学科", "感染科",
    "血液内科", "风湿免疫科", "核医学科", "临床营养科", "全科医学科", "康复科", "神经外科",
)
HOSPITALS = (
    "北京协和医院", "四川大学华西医院", "复旦大学附属中山医院", "上海交通大学医学院附属瑞金医院",
    "中山大学附属第一医院", "浙江大学医学院附属第二医院", "华中科技大学同济医学院附属同济医院",
    "首都医科大学宣武医院", "中南大学湘雅医院", "郑州大学第一附属医院", "武汉市中心医院",
    "杭州市第一人民医院", "深圳市人民医院", "成都市第三人民医院", "南京鼓楼医院",
    "西安交通大学第一附属医院", "北京大学人民医院", "天津医科大学总医院", "青岛大学附属医院",
    "广州市妇女儿童医疗中心", "张家港市第一人民医院", "石家庄市第二医院", "白银市第一人民医院",
    "周口市中心医院", "高州市人民医院", "马鞍山市人民医院", "黄石市中心医院", "常州市第一人民医院",
    "安阳市人民医院", "金华市中心医院", "和平县人民医院", "文山州人民医院",
)
# (phrase, sentence in which it occurs); the phrase is what must survive.
PHRASES = (
    ("安返病房", "术毕患者安返病房，"), ("主任医师查体", "主任医师查体："), ("生命体征平稳", "生命体征平稳，"),
    ("和缓", "腹痛较前和缓，"), ("有无", "询问有无胸闷、气促，"), ("双肺呼吸音清", "双肺呼吸音清，"),
    ("未闻及干湿性啰音", "未闻及干湿性啰音，"), ("心律齐", "心率78次/分，心律齐，"),
    ("腹软", "腹软，"), ("无压痛及反跳痛", "无压痛及反跳痛。"), ("神志清楚", "神志清楚，"),
    ("精神可", "精神可，"), ("饮食睡眠可", "饮食睡眠可，"), ("大小便正常", "大小便正常。"),
    ("既往体健", "既往体健，"), ("否认药物过敏史", "否认药物过敏史。"), ("病情平稳", "目前病情平稳，"),
    ("预后良好", "预后良好。"), ("平车推入", "平车推入病房，"), ("步入病房", "患者步行步入病房，"),
    ("向家属交代病情", "已向家属交代病情，"), ("于今日出院", "准予于今日出院。"), ("上级医师查房", "上级医师查房后指示："),
    ("平素体健", "平素体健，"), ("金黄色葡萄球菌", "痰培养示金黄色葡萄球菌，"), ("方可出院", "复查正常后方可出院。"),
    ("石膏固定", "予石膏固定，"), ("黄色脓痰", "咳黄色脓痰，"), ("时有胸闷", "近日时有胸闷，"),
    ("全麻", "在全麻下行手术，"), ("闻及", "可闻及湿啰音，"), ("保守治疗", "建议先行保守治疗，"),
    ("言语清晰", "言语清晰，"), ("应答切题", "应答切题，"), ("查房", "今日查房，"), ("常规", "完善血常规，"),
    ("明显好转", "症状明显好转，"), ("余无特殊", "余无特殊。"), ("双下肢无水肿", "双下肢无水肿。"),
    ("主治医师", "主治医师意见："), ("住院医师", "住院医师记录："), ("和蔼", "态度和蔼，"),
    ("高热", "患者高热，"), ("安静", "嘱安静休息，"), ("文化程度", "文化程度：初中，"),
    ("康复训练", "继续康复训练，"), ("向患者", "已向患者解释，"), ("于门诊", "嘱于门诊随诊，"),
    ("华法林抗凝", "继续华法林抗凝，"), ("高血压病史", "有高血压病史10年，"), ("史", "家族史：无特殊。"),
    ("房颤", "心电图示房颤，"), ("宫颈", "宫颈光滑，"), ("关节", "双膝关节肿胀，"), ("焦虑", "情绪焦虑，"),
    ("满意", "对治疗满意，"), ("尚可", "食欲尚可，"), ("能否", "评估能否耐受手术，"),
    ("危重", "病情危重，"), ("明确诊断", "为明确诊断，"), ("连续", "连续3天，"), ("温水", "温水擦浴，"),
    ("舒适", "患者自觉舒适，"), ("易疲劳", "易疲劳，"), ("冷敷", "局部冷敷，"), ("包扎", "加压包扎，"),
    ("任何不适", "如有任何不适随诊。"), ("申请", "已申请会诊，"), ("通知", "已通知家属，"),
    ("花粉过敏", "自述花粉过敏，"), ("单侧", "单侧肢体无力，"), ("原发性", "考虑原发性，"),
    ("严格", "严格卧床，"), ("牛奶", "可饮牛奶，"), ("艾灸", "配合艾灸，"), ("强直", "肢体强直，"),
    ("季节", "与季节变化有关，"), ("毛发", "毛发分布正常，"), ("费用", "已告知费用，"),
    ("司机", "职业为司机，"), ("左侧", "左侧肢体肌力Ⅳ级，"), ("右上腹", "右上腹压痛，"),
    ("管床", "管床医师："), ("门诊", "门诊随访，"), ("付费", "已完成付费，"), ("羊水", "羊水清，"),
    ("童年", "童年时曾患麻疹，"), ("危急值", "危急值已报告，"), ("和/或", "咳嗽和/或咳痰，"),
    ("有所缓解", "疼痛有所缓解，"), ("平卧位", "取平卧位，"), ("安置", "安置心电监护，"),
    ("康复出院", "病情好转，康复出院。"), ("文字", "文字描述如下："), ("金属", "体内无金属植入物，"),
)
LABS = (
    ("血红蛋白", "g/L", (80, 160, 0)), ("白细胞计数", "×10^9/L", (3, 15, 1)), ("肌酐", "μmol/L", (45, 400, 0)),
    ("糖化血红蛋白", "%", (5, 12, 1)), ("ALT", "U/L", (8, 120, 0)), ("CRP", "mg/L", (1, 150, 1)),
    ("Na+", "mmol/L", (128, 148, 0)), ("K+", "mmol/L", (3, 6, 2)), ("TSH", "mIU/L", (0, 9, 2)),
    ("PLT", "×10⁹/L", (60, 400, 0)), ("INR", "", (0, 3, 2)), ("BNP", "pg/mL", (20, 3000, 0)),
    ("空腹血糖", "mmol/L", (3, 20, 1)), ("总胆红素", "μmol/L", (5, 80, 1)), ("尿酸", "μmol/L", (200, 700, 0)),
    ("LDL-C", "mmol/L", (1, 5, 2)), ("D-二聚体", "mg/L FEU", (0, 5, 2)), ("降钙素原", "ng/mL", (0, 10, 2)),
    ("白蛋白", "g/L", (25, 50, 1)), ("eGFR", "mL/min/1.73m²", (15, 120, 0)), ("SpO2", "%", (88, 100, 0)),
)
DOSES = (
    "100mg qd", "0.5g bid", "10U 皮下注射 睡前", "75 mg po qd", "5mg/kg", "2.5mg ivgtt",
    "40mg iv q12h", "20mg qn", "1g q8h", "0.25g tid", "50μg qd", "500ml ivgtt", "2喷 bid",
    "1片 tid", "10mg 口服 每日一次", "4mg 静推", "0.1g 每日两次", "8U 餐前", "3.75mg 皮下 q28d",
)
PROVINCES = {
    "北京市": [("北京市", ["朝阳区", "海淀区", "东城区", "西城区", "丰台区"])],
    "上海市": [("上海市", ["徐汇区", "浦东新区", "黄浦区", "静安区", "闵行区"])],
    "广东省": [("广州市", ["天河区", "越秀区", "海珠区"]), ("深圳市", ["南山区", "福田区", "宝安区"])],
    "浙江省": [("杭州市", ["西湖区", "拱墅区", "余杭区"]), ("温州市", ["鹿城区", "瓯海区"])],
    "四川省": [("成都市", ["武侯区", "锦江区", "青羊区"]), ("绵阳市", ["涪城区"])],
    "河南省": [("郑州市", ["金水区", "二七区"]), ("周口市", ["川汇区", "郸城县", "鹿邑县"])],
    "湖北省": [("武汉市", ["江汉区", "武昌区", "洪山区"]), ("黄石市", ["下陆区"])],
    "江苏省": [("南京市", ["鼓楼区", "玄武区"]), ("苏州市", ["姑苏区", "张家港市"])],
    "新疆维吾尔自治区": [("乌鲁木齐市", ["天山区", "沙依巴克区"]), ("喀什地区", ["喀什市", "疏附县"])],
    "内蒙古自治区": [("呼和浩特市", ["新城区", "赛罕区"])],
    "广西壮族自治区": [("南宁市", ["青秀区", "兴宁区"])],
    "黑龙江省": [("哈尔滨市", ["南岗区", "道里区"])],
    "甘肃省": [("白银市", ["白银区", "平川区"]), ("兰州市", ["城关区"])],
}
STREETS = ("文三路", "人民路", "解放大道", "中山北路", "建设街", "和平路", "长江路", "幸福里",
           "花园街", "光明巷", "滨江大道", "科技园路", "学府路", "望京街", "胜利东街", "迎宾大道")
COMMUNITIES = ("华星时代广场", "阳光花园", "锦绣小区", "翠苑三区", "幸福家园", "金色港湾",
               "和平新村", "绿城桂花园", "万科城", "碧桂园")
VILLAGES = ("李楼村", "王庄村", "张家湾村", "新民村", "东风村", "红旗村", "前进村")
EMPLOYER_WORDS = ("华兴", "恒通", "海康", "鑫达", "金桥", "远航", "新世纪", "长城", "东方红", "宏远",
                  "中天", "安泰", "和信", "瑞丰", "国泰", "天宇")
EMPLOYER_SUFFIX = ("科技有限公司", "建筑工程有限公司", "物流有限公司", "商贸有限责任公司",
                   "电子股份有限公司", "食品有限公司", "机械制造厂", "集团有限公司", "信息技术有限公司")
SCHOOLS = ("第八中学", "实验小学", "外国语学校", "第一中学", "师范大学", "理工大学", "职业技术学院",
           "育才小学", "第三十七中学")
PLATE_PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
AREA_CODES = ("010", "021", "020", "022", "023", "0755", "0571", "027", "028", "029", "025",
              "0512", "0731", "0371", "0891", "0991", "0532", "0574")
MOBILE_PREFIXES = ("130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151",
                   "152", "155", "157", "158", "159", "166", "170", "173", "176", "177", "180",
                   "181", "182", "183", "186", "187", "188", "189", "191", "198", "199")
EMAIL_DOMAINS = ("163.com", "qq.com", "126.com", "sina.com", "gmail.com", "foxmail.com",
                 "sohu.com", "yeah.net", "hotmail.com", "139.com", "outlook.com", "pumch.cn",
                 "wchscu.cn", "zju.edu.cn")
PINYIN = ("wang", "li", "zhang", "liu", "chen", "yang", "huang", "zhao", "wu", "zhou", "xu",
          "sun", "ma", "zhu", "hu", "guo", "he", "gao", "lin", "luo", "wei", "fang", "jie",
          "ming", "hua", "jun", "ying", "xiao", "hong", "yan", "qiang", "ping", "lei", "ting")
REGION_CODES = ("110105", "110108", "310104", "310115", "440305", "440106", "330106", "510107",
                "410102", "411625", "420106", "320102", "650102", "653101", "150105", "450103",
                "230103", "620402", "130104", "370202")
BANK_BINS = ("622202", "621700", "622848", "621226", "623668", "621483", "622588", "622609",
             "621799", "625965", "436742", "622700")

FULLWIDTH = {c: chr(ord(c) + 0xFEE0) for c in string.digits + string.ascii_letters + "-:()/.,+@#_"}
FULLWIDTH[" "] = "\u3000"


# ---------------------------------------------------------------------------- tokens

@dataclass(frozen=True)
class _I:  # an identifier
    kind: str
    value: str
    role: str | None = None
    form: str | None = None


@dataclass(frozen=True)
class _K:  # ordinary content that must survive
    kind: str
    value: str


@dataclass(frozen=True)
class _F:  # a labelled field: label in Chinese, label in English, value tokens
    zh: str
    en: str
    value: tuple


_Token = "str | _I | _K"


def _luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def _id_checksum(body17: str) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return "10X98765432"[sum(int(c) * w for c, w in zip(body17, weights)) % 11]


class _World:
    """Random people, numbers and words for one split."""

    def __init__(self, seed: int):
        self.r = random.Random(seed)
        self.fake = Faker("zh_CN")
        self.fake.seed_instance(seed)

    # -- helpers
    def pick(self, seq):
        return self.r.choice(seq)

    def digits(self, n: int, first_nonzero: bool = True) -> str:
        s = "".join(self.r.choice(string.digits) for _ in range(n))
        if first_nonzero and s[0] == "0":
            s = str(self.r.randint(1, 9)) + s[1:]
        return s

    # -- names
    def given(self) -> str:
        n = 1 if self.r.random() < 0.3 else 2
        return "".join(self.pick(GIVEN_CHARS) for _ in range(n))

    def name(self, role: str) -> _I:
        """A full name of a person; form says how it is written."""
        x = self.r.random()
        if x < 0.30:
            form, text = "common", self.pick(COMMON_SURNAMES) + self.given()
        elif x < 0.42:
            form, text = "compound", self.pick(COMPOUND_SURNAMES) + self.given()
        elif x < 0.52:
            form, text = "rare", self.pick(RARE_SURNAMES) + self.given()
        elif x < 0.62:
            form = "minority"
            if self.r.random() < 0.7:
                text = self.pick(MINORITY_FIRST) + "·" + self.pick(MINORITY_LAST)
            else:
                text = self.pick(MINORITY_UNDOTTED)
        elif x < 0.77:
            form, text = "ordinary_chars", self.pick(COMMON_SURNAMES) + self.pick(ORDINARY_GIVEN)
        elif x < 0.85:
            form = "spaced"
            surname = self.pick(COMPOUND_SURNAMES) if self.r.random() < 0.15 else self.pick(COMMON_SURNAMES)
            given = self.given()
            if len(surname + given) == 2 or self.r.random() < 0.5:
                text = " ".join(surname + given)
            else:
                text = surname + " " + given
            if self.r.random() < 0.3:
                text = text.replace(" ", "\u3000")
        else:
            form, text = "faker", self.fake.name()
        return _I("name", text, role, form)

    def surname_title(self, role: str) -> list:
        titles = {"doctor": DOCTOR_TITLES, "nurse": NURSE_TITLES, "technician": TECH_TITLES}
        title = self.pick(titles.get(role, RELATIVE_TITLES))
        s = self.pick(COMPOUND_SURNAMES) if self.r.random() < 0.15 else self.pick(COMMON_SURNAMES)
        return [_I("name", s, role, "title"), title]

    # -- numbers
    def birth(self, age: int, ref: dt.date) -> dt.date:
        return ref - dt.timedelta(days=int(age * 365.25) + self.r.randint(1, 360))

    def id_card(self, born: dt.date) -> str:
        region = self.pick(REGION_CODES)
        if born.year < 2000 and self.r.random() < 0.15:  # first-generation card, 15 digits
            return region + born.strftime("%y%m%d") + self.digits(3, False)
        while True:
            body = region + born.strftime("%Y%m%d") + self.digits(3, False)
            check = _id_checksum(body)
            if self.r.random() < 0.5 or check == "X":
                break
        value = body + check
        if check == "X" and self.r.random() < 0.3:
            value = value[:-1] + "x"
        if self.r.random() < 0.12:
            value = f"{value[:6]} {value[6:14]} {value[14:]}"
        return value

    def mobile(self) -> str:
        n = self.pick(MOBILE_PREFIXES) + self.digits(8, False)
        x = self.r.random()
        if x < 0.45:
            return n
        if x < 0.6:
            return f"{n[:3]} {n[3:7]} {n[7:]}"
        if x < 0.72:
            return f"{n[:3]}-{n[3:7]}-{n[7:]}"
        if x < 0.84:
            return self.pick(("+86 ", "+86-", "+86", "(+86)", "0086 ", "86-")) + n
        return f"{n[:3]}-{n[3:]}" if self.r.random() < 0.5 else f"{n[:3]} {n[3:]}"

    def landline(self) -> str:
        area = self.pick(AREA_CODES)
        local = self.digits(8 if len(area) == 3 else self.r.choice((7, 8)))
        x = self.r.random()
        if x < 0.3:
            s = f"{area}-{local}"
        elif x < 0.5:
            s = f"({area}){local}"
        elif x < 0.6:
            s = f"（{area}）{local}"
        elif x < 0.7:
            s = f"{area} {local[:4]} {local[4:]}"
        elif x < 0.8:
            s = f"+86-{area[1:]}-{local}"
        else:
            s = f"{area}{local}"
        if self.r.random() < 0.25:
            s += self.pick(("-", " 转", "转", " ext.", "-分机")) + self.digits(self.r.choice((3, 4)))
        return s

    def email(self) -> str:
        x = self.r.random()
        if x < 0.25:
            user = self.digits(self.r.randint(6, 10))
            dom = "qq.com"
        else:
            user = self.pick(PINYIN) + self.pick(("", ".", "_")) + self.pick(PINYIN)
            if self.r.random() < 0.6:
                user += self.digits(self.r.randint(2, 4), False)
            dom = self.pick(EMAIL_DOMAINS)
        return f"{user}@{dom}"

    def address(self) -> str:
        prov = self.pick(list(PROVINCES))
        city, districts = self.pick(PROVINCES[prov])
        district = self.pick(districts)
        head = ("" if prov == city else prov) + city + district
        if self.r.random() < 0.2:
            return (head + self.pick(("城关镇", "汲冢镇", "新华乡", "石桥镇")) + self.pick(VILLAGES)
                    + f"{self.r.randint(1, 9)}组{self.r.randint(1, 80)}号")
        if self.r.random() < 0.15:
            return self.fake.address().rsplit(" ", 1)[0]
        s = head + self.pick(("", "西湖街道", "望京街道", "粤海街道", "五里墩街道")) + self.pick(STREETS)
        s += f"{self.r.randint(1, 999)}号"
        y = self.r.random()
        if y < 0.4:
            s += self.pick(COMMUNITIES) + f"{self.r.randint(1, 30)}栋{self.r.randint(1, 6)}单元{self.r.randint(101, 2808)}室"
        elif y < 0.7:
            s += f"{self.r.randint(1, 20)}号楼{self.r.randint(1, 4)}单元{self.r.randint(101, 1802)}"
        elif y < 0.85:
            s += self.pick(COMMUNITIES) + f"{self.pick('ABCDE')}座{self.r.randint(101, 3202)}室"
        return s

    def postcode(self) -> str:
        return self.pick(("100", "200", "510", "518", "310", "610", "450", "430", "210", "830",
                          "010", "530")) + self.digits(3, False)

    def passport(self) -> str:
        x = self.r.random()
        if x < 0.5:
            return "E" + self.digits(8, False)
        if x < 0.8:
            return "E" + self.pick("ABCDEFGHJK") + self.digits(7, False)
        return self.pick("GP") + self.digits(8, False)

    def travel_permit(self) -> tuple[str, str]:
        x = self.r.random()
        if x < 0.3:
            if x < 0.1:
                return "往来港澳通行证", "C" + self.pick("ABCDEFG") + self.digits(7, False)
            return "往来港澳通行证", "C" + self.digits(8, False)
        if x < 0.5:
            return "往来台湾通行证", "L" + self.digits(8, False)
        if x < 0.75:
            return "港澳居民来往内地通行证", self.pick("HM") + self.digits(self.r.choice((8, 10)), False)
        return "台湾居民来往大陆通行证", self.digits(8, False)

    def wechat(self) -> str:
        x = self.r.random()
        if x < 0.3:
            return "wxid_" + "".join(self.r.choice(string.ascii_lowercase + string.digits) for _ in range(12))
        base = self.pick(PINYIN) + self.pick(("_", "", "-")) + self.pick(PINYIN)
        if self.r.random() < 0.7:
            base += self.digits(self.r.randint(2, 4), False)
        if self.r.random() < 0.3:
            base = base.capitalize()
        return base

    def qq(self) -> str:
        return self.digits(self.r.randint(6, 11))

    def plate(self) -> str:
        p = self.pick(PLATE_PROVINCES) + self.pick("ABCDEFGHJKLMN")
        letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
        if self.r.random() < 0.35:  # new-energy plate, eight characters
            tail = (self.pick("DF") + self.pick(letters + string.digits) + self.digits(4, False)
                    if self.r.random() < 0.6 else self.digits(5, False) + self.pick("DF"))
        else:
            tail = "".join(self.r.choice(letters + string.digits) if i < 2 and self.r.random() < 0.4
                           else self.r.choice(string.digits) for i in range(5))
        sep = self.pick(("", "", "·", " ", "-"))
        return p + sep + tail

    def ip(self) -> str:
        if self.r.random() < 0.1:
            return "2408:" + ":".join(f"{self.r.randint(0, 65535):x}" for _ in range(4)) + "::" + f"{self.r.randint(1, 999):x}"
        first = self.pick((10, 172, 192, 58, 112, 202, 221, 36, 101, 183))
        return ".".join(str(v) for v in (first, self.r.randint(0, 255), self.r.randint(0, 255), self.r.randint(1, 254)))

    def employer(self) -> str:
        x = self.r.random()
        if x < 0.35:
            prov = self.pick(list(PROVINCES))
            city = self.pick(PROVINCES[prov])[0]
            return city + self.pick(EMPLOYER_WORDS) + self.pick(EMPLOYER_SUFFIX)
        if x < 0.6:
            return self.fake.company()
        if x < 0.85:
            city = self.pick(self.pick(list(PROVINCES.values())))[0]
            return city + self.pick(("", "武侯区", "南山区", "西湖区")) + self.pick(SCHOOLS)
        return self.pick(("国家电网", "中国石化", "中国移动通信集团", "中铁十一局", "顺丰速运")) + self.pick(("", "第三工程处", "城东营业部"))

    def record_number(self) -> tuple[str, str, str]:
        """(label kind, Chinese label, value)."""
        kind, labels, makers = self.pick((
            ("mrn", ("病历号", "病案号", "病历编号", "门诊号", "就诊卡号", "ID号", "HIS号", "登记号", "MRN"),
             (lambda: self.digits(self.r.randint(6, 10)), lambda: "MZ" + self.digits(8), lambda: self.digits(4) + "-" + self.digits(6))),
            ("admission", ("住院号", "住院号码", "入院登记号", "ZY号"),
             (lambda: self.digits(7), lambda: "ZY" + self.digits(8), lambda: "Z" + self.digits(9))),
            ("pathology", ("病理号", "病理编号", "冰冻号"),
             (lambda: "P" + self.digits(2) + "-" + self.digits(5), lambda: self.digits(4) + "-" + self.digits(5), lambda: "BL" + self.digits(7))),
            ("specimen", ("标本号", "样本编号", "条码号", "样本号"),
             (lambda: self.digits(10), lambda: "S" + self.digits(2) + "-" + self.digits(5), lambda: self.digits(12))),
            ("imaging", ("影像号", "检查号", "CT号", "MR号", "放射编号", "PACS号"),
             (lambda: "CT" + self.digits(8) + "-" + self.digits(4), lambda: "MR-" + self.digits(6), lambda: self.digits(9))),
            ("bed", ("床号", "床位号", "床位"),
             (lambda: str(self.r.randint(1, 60)), lambda: f"{self.pick('ABC')}-{self.r.randint(1, 40)}", lambda: f"+{self.r.randint(1, 9)}")),
        ))
        return kind, self.pick(labels), self.pick(makers)()

    def bank_card(self) -> str:
        n = self.pick((16, 19))
        body = self.pick(BANK_BINS) + self.digits(n - 7, False)
        card = body + _luhn_digit(body)
        if self.r.random() < 0.3:
            card = " ".join(card[i:i + 4] for i in range(0, len(card), 4))
        return card

    def insurance_card(self, id_card: str) -> tuple[str, str]:
        x = self.r.random()
        if x < 0.3:
            return "社会保障卡号", id_card.replace(" ", "")
        if x < 0.6:
            return "社保卡号", self.pick("ABCDEFGHJKLM") + self.digits(8, False)
        if x < 0.85:
            return "医保卡号", self.digits(self.r.choice((10, 12, 16)))
        return "医疗保险号", self.pick(("YB", "M", "")) + self.digits(11)

    def date_text(self, d: dt.date) -> str:
        cn = "〇一二三四五六七八九"
        fmts = (
            lambda: f"{d.year}年{d.month}月{d.day}日", lambda: f"{d.year}年{d.month:02d}月{d.day:02d}日",
            lambda: d.strftime("%Y-%m-%d"), lambda: f"{d.year}/{d.month}/{d.day}",
            lambda: d.strftime("%Y.%m.%d"), lambda: d.strftime("%Y%m%d"),
            lambda: f"{d.year % 100:02d}.{d.month}.{d.day}",
            lambda: "".join(cn[int(c)] for c in str(d.year)) + "年" + _cn_number(d.month) + "月" + _cn_number(d.day) + "日",
            lambda: d.strftime("%d/%m/%Y"),
        )
        return self.pick(fmts)()


def _cn_number(n: int) -> str:
    digits = "〇一二三四五六七八九"
    if n < 10:
        return digits[n]
    tens, ones = divmod(n, 10)
    return ("" if tens == 1 else digits[tens]) + "十" + ("" if ones == 0 else digits[ones])


# ---------------------------------------------------------------------------- people

@dataclass
class _Case:
    patient: _I
    sex: str
    age: int
    born: dt.date
    visit: dt.date
    id_card: str
    mobile: str
    address: str
    postcode: str
    employer: str
    doctors: list
    nurses: list
    techs: list
    relatives: list  # (relation, name)
    guardian: _I
    hospital: str
    department: str
    diseases: list
    drugs: list


def _case(w: _World) -> _Case:
    visit = dt.date(2021, 1, 1) + dt.timedelta(days=w.r.randint(0, 1600))
    age = w.r.randint(90, 104) if w.r.random() < 0.12 else w.r.randint(1, 89)
    born = w.birth(age, visit)
    dis = w.r.sample(DISEASES, 2) + [w.pick(EPONYMS)]
    return _Case(
        patient=w.name("patient"), sex=w.pick(("男", "女")), age=age, born=born, visit=visit,
        id_card=w.id_card(born), mobile=w.mobile(), address=w.address(), postcode=w.postcode(),
        employer=w.employer(),
        doctors=[w.name("doctor") for _ in range(4)], nurses=[w.name("nurse") for _ in range(2)],
        techs=[w.name("technician") for _ in range(2)],
        relatives=[(w.pick(RELATIONS), w.name("relative")) for _ in range(2)],
        guardian=w.name("guardian"), hospital=w.pick(HOSPITALS), department=w.pick(DEPARTMENTS),
        diseases=dis, drugs=w.r.sample(DRUGS, 3),
    )


def _age(c: _Case) -> list:
    return [_I("age_over_89", str(c.age)) if c.age > 89 else str(c.age), "岁"]


def _disease(name: str) -> _K:
    return _K("eponym" if name in EPONYMS else "disease", name)


def _lab(w: _World) -> list:
    label, unit, (lo, hi, nd) = w.pick(LABS)
    value = f"{w.r.uniform(lo, hi):.{nd}f}"
    sep = w.pick((" ", "", "：", " "))
    return [label + sep, _K("lab_value", value + (w.pick((" ", "")) + unit if unit else "")),
            w.pick(("", " ↑", " ↓", "（参考范围内）"))]


def _phrase(w: _World) -> list:
    phrase, sentence = w.pick(PHRASES)
    i = sentence.index(phrase)
    return [sentence[:i], _K("phrase", phrase), sentence[i + len(phrase):]]


def _drug_line(w: _World, drug: str) -> list:
    return [_K("drug", drug), w.pick((" ", "，", " ")), _K("dose", w.pick(DOSES))]


def _staff_mention(w: _World, c: _Case, role: str) -> list:
    """A staff member named in prose, with or without a cue word."""
    pool = {"doctor": c.doctors, "nurse": c.nurses, "technician": c.techs}[role]
    if w.r.random() < 0.25:
        return w.surname_title(role)
    person = w.pick(pool)
    x = w.r.random()
    if role == "doctor":
        if x < 0.3:
            return [w.pick(("经", "由", "请", "联系")) + w.pick(DEPARTMENTS), person, w.pick(("主任", "医师", "主治医师", "")) + w.pick(("会诊", "查看患者", "指导"))]
        if x < 0.6:
            return [w.pick(("与", "同", "和")), person, w.pick(("医师", "大夫", "")) + "沟通后"]
        return [person, w.pick(("主任医师", "副主任医师", "主治医师", "医生")) + w.pick(("查房示", "指出", "建议"))]
    if role == "nurse":
        return [w.pick(("责任护士", "", "夜班")), person, w.pick(("巡视病房", "予以翻身", "执行医嘱", "测量血压"))]
    return [w.pick(("由", "", "检查者")), person, w.pick(("完成采样", "操作", "复核"))]


# ---------------------------------------------------------------------------- fields

def _header(w: _World, c: _Case, extra: int = 3) -> list:
    fields = [
        _F("姓名", "Name", (c.patient,)),
        _F("性别", "Sex", (c.sex,)),
        _F("年龄", "Age", tuple(_age(c))),
    ]
    optional = [
        lambda: _F("出生日期", "DOB", (_I("birth_date", w.date_text(c.born)),)),
        lambda: _F("身份证号", "ID No.", (_I("id_card", c.id_card),)),
        lambda: _F(w.pick(("联系电话", "手机", "电话")), "Tel", (_I("mobile", c.mobile),)),
        lambda: _F("家庭住址", "Addr", (_I("address", c.address),)),
        lambda: _F("邮编", "Zip", (_I("postcode", c.postcode),)),
        lambda: _F("工作单位", "Employer", (_I("employer", c.employer),)),
        lambda: _record_field(w),
        lambda: _record_field(w),
        lambda: _F("科室", "Dept", (_K("department", c.department),)),
        lambda: _F("医院", "Hospital", (_K("hospital", c.hospital),)),
        lambda: _F(w.pick(("联系人", "紧急联系人")), "Contact", (c.relatives[0][1], "（" + c.relatives[0][0].lstrip("其") + "）")),
        lambda: _F("联系人电话", "Contact Tel", (_I("mobile", w.mobile()),)),
        lambda: _F("单位电话", "Office", (_I("landline", w.landline()),)),
        lambda: _F(w.pick(("电子邮箱", "E-mail", "邮箱")), "Email", (_I("email", w.email()),)),
        lambda: (lambda lab: _F(lab[0], "Ins No.", (_I("insurance_card", lab[1], form=lab[0]),)))(w.insurance_card(c.id_card)),
    ]
    w.r.shuffle(optional)
    return fields + [make() for make in optional[:extra]]


def _record_field(w: _World) -> _F:
    kind, label, value = w.record_number()
    return _F(label, {"mrn": "MRN", "admission": "Adm No.", "pathology": "Path No.", "specimen": "Specimen",
                      "imaging": "Img No.", "bed": "Bed"}[kind], (_I("record_number", value, form=kind),))


def _signature(w: _World, person: _I, label: str | None = None) -> _F:
    label = label or w.pick(("签名", "医师签名", "签字", "记录者", "审核", "报告医师", "医生签字"))
    value = (person,)
    if w.r.random() < 0.3:
        value = (person, f"  {w.r.randint(2021, 2025)}-{w.r.randint(1, 12):02d}-{w.r.randint(1, 28):02d}")
    return _F(label, "Signed", value)


def _contact_block(w: _World, c: _Case) -> list:
    """Rare identifiers, a few per document."""
    makers = [
        lambda: _F("护照号", "Passport No.", (_I("passport", w.passport()),)),
        lambda: (lambda p: _F(p[0] + "号码", "Permit No.", (_I("travel_permit", p[1]),)))(w.travel_permit()),
        lambda: _F(w.pick(("微信", "微信号", "VX", "WeChat")), "WeChat", (_I("wechat", w.wechat()),)),
        lambda: _F(w.pick(("QQ", "QQ号", "qq")), "QQ", (_I("qq", w.qq()),)),
        lambda: _F(w.pick(("车牌号", "车牌", "肇事车辆")), "Plate", (_I("plate", w.plate()),)),
        lambda: _F(w.pick(("登录IP", "终端IP", "IP地址")), "IP", (_I("ip", w.ip()),)),
        lambda: _F(w.pick(("银行卡号", "退费账户", "账号")), "Card No.", (_I("bank_card", w.bank_card()),)),
        lambda: (lambda p: _F(p[0], "SSC No.", (_I("insurance_card", p[1], form=p[0]),)))(w.insurance_card(c.id_card)),
        lambda: _F(w.pick(("个人主页", "随访链接", "网址")), "URL", (_I("url", _url(w)),)),
        lambda: _F("单位电话", "Office Tel", (_I("landline", w.landline()),)),
        lambda: _F(w.pick(("邮箱", "Email")), "Email", (_I("email", w.email()),)),
        lambda: _F("监护人", "Guardian", (c.guardian,)),
    ]
    w.r.shuffle(makers)
    return [m() for m in makers[: w.r.randint(2, 4)]]


def _url(w: _World) -> str:
    return w.pick((
        lambda: f"https://www.haodf.com/doctor/{w.digits(8)}.html",
        lambda: f"http://weibo.com/u/{w.digits(10)}",
        lambda: f"https://{w.pick(PINYIN)}{w.pick(PINYIN)}.blog.163.com/",
        lambda: f"www.{w.pick(PINYIN)}{w.digits(3)}.cn/profile?id={w.digits(6)}",
        lambda: f"https://followup.example-hosp.cn/p/{w.digits(12)}",
    ))()


# ---------------------------------------------------------------------------- narrative

def _narrative_intro(w: _World, c: _Case) -> list:
    x = w.r.random()
    name = c.patient
    if x < 0.4:
        return ["患者", name, f"，{c.sex}，"] + _age(c) + ["，因", w.pick(("反复胸闷", "咳嗽咳痰", "上腹痛", "头晕", "发热", "肢体无力")), f"{w.r.randint(1, 30)}天入院。"]
    if x < 0.7:
        return [name, f"，{c.sex}性，"] + _age(c) + ["，", w.pick(("汉族", "回族", "维吾尔族", "藏族", "蒙古族")), "，", w.pick(("已婚", "未婚", "丧偶")), "，职业：", w.pick(("退休", "农民", "职员", "教师")), "。"]
    return [f"{c.visit.year}年{c.visit.month}月{c.visit.day}日", name, "（", c.sex, "，"] + _age(c) + ["）由", w.pick(c.relatives)[0], "陪同来诊。"]


def _relative_sentence(w: _World, c: _Case) -> list:
    rel, person = w.pick(c.relatives)
    x = w.r.random()
    if x < 0.25:
        return ["已向", rel, person, "交代病情，其表示理解。"]
    if x < 0.45:
        return ["患者由其", rel.lstrip("其"), person, "陪同就诊，"]
    if x < 0.6:
        s, title = w.surname_title("relative")
        return ["家属", s, title, "（", rel.lstrip("其"), "）要求自动出院，"]
    if x < 0.75:
        return ["与家属", person, "沟通手术风险，同意手术。"]
    if x < 0.88:
        return [person, "（", rel.lstrip("其"), "，电话", _I("mobile", w.mobile()), "）签字同意。"]
    return ["监护人", c.guardian, "代为签署。"]


def _body(w: _World, c: _Case, n: int) -> list:
    """n sentences of clinical prose mixing every kind of ordinary content and staff names."""
    out: list = []
    makers = [
        lambda: _phrase(w), lambda: _phrase(w), lambda: _phrase(w),
        lambda: ["诊断：", _disease(w.pick(c.diseases)), "（", _K("icd10", w.pick(ICD10)), "）。"],
        lambda: ["既往", _disease(w.pick(c.diseases)), "病史，长期服用", *_drug_line(w, w.pick(c.drugs)), "。"],
        lambda: ["予", *_drug_line(w, w.pick(DRUGS)), "治疗，"],
        lambda: ["查", *_lab(w), "，", *_lab(w), "。"],
        lambda: ["转", _K("department", w.pick(DEPARTMENTS)), "继续治疗。"],
        lambda: ["曾于", _K("hospital", w.pick(HOSPITALS)), "诊断为", _disease(w.pick(EPONYMS)), "，"],
        lambda: _staff_mention(w, c, "doctor") + ["，"],
        lambda: _staff_mention(w, c, "nurse") + ["。"],
        lambda: _staff_mention(w, c, "technician") + ["。"],
        lambda: _relative_sentence(w, c),
        lambda: ["BP ", _K("lab_value", f"{w.r.randint(95, 180)}/{w.r.randint(55, 105)}mmHg"), "，HR ", _K("lab_value", f"{w.r.randint(55, 120)}bpm"), "，T ", _K("lab_value", f"{w.r.uniform(36, 39.5):.1f}℃"), "。"],
    ]
    for _ in range(n):
        out.extend(w.pick(makers)())
    return out


# ---------------------------------------------------------------------------- documents

def _doc_blocks(w: _World, c: _Case, kind: str) -> list:
    """The document as blocks: ('title', str), ('fields', [_F]), ('section', heading, tokens)."""
    d, n, t = c.doctors, c.nurses, c.techs
    blocks: list = [("title", f"{c.hospital}\n{kind}" if w.r.random() < 0.5 else kind)]
    head = _header(w, c, extra=w.r.randint(3, 6))
    blocks.append(("fields", head))
    sec = lambda h, k=3: blocks.append(("section", h, _body(w, c, k)))  # noqa: E731
    intro = _narrative_intro(w, c)
    if kind == "门诊病历":
        blocks.append(("section", "主诉", intro))
        sec("现病史", 4)
        blocks.append(("section", "诊断", [_disease(c.diseases[0]), "；", _disease(c.diseases[2]), " ", _K("icd10", EPONYM_ICD.get(c.diseases[2], w.pick(ICD10)))]))
        blocks.append(("section", "处理", [*_drug_line(w, c.drugs[0]), "；", *_drug_line(w, c.drugs[1])]))
        blocks.append(("fields", [_signature(w, d[0], "接诊医师")]))
    elif kind == "出院小结":
        blocks.append(("fields", [_F("入院日期", "Adm", (f"{c.visit:%Y-%m-%d}",)), _F("主治医师", "Attending", (d[1],))]))
        blocks.append(("section", "入院情况", intro + _body(w, c, 2)))
        sec("诊疗经过", 5)
        blocks.append(("section", "出院医嘱", [*_drug_line(w, c.drugs[2]), "。", *_phrase(w), "嘱", w.pick(("1周", "2周", "1个月")), "后", _K("department", c.department), "门诊复查。"]))
        blocks.append(("fields", [_signature(w, d[0], "住院医师"), _signature(w, d[2], "上级医师")]))
    elif kind == "入院记录":
        blocks.append(("section", "一般情况", intro))
        blocks.append(("fields", [_F("病史陈述者", "Informant", (w.pick(c.relatives)[1],)), _F("可靠程度", "Reliability", ("可靠",))]))
        sec("现病史", 4)
        sec("体格检查", 3)
        blocks.append(("fields", [_signature(w, d[3], "记录医师")]))
    elif kind == "检验报告":
        rows = [("fields", [_F("申请医师", "Req. by", (d[0],)), _F("标本类型", "Specimen", ("静脉血",))])]
        blocks.extend(rows)
        blocks.append(("section", "结果", sum((_lab(w) + ["\n"] for _ in range(w.r.randint(4, 7))), [])))
        blocks.append(("fields", [_signature(w, t[0], "检验者"), _signature(w, t[1], w.pick(("审核者", "审核", "核对者")))]))
    elif kind == "影像报告":
        blocks.append(("fields", [_record_field(w), _F("检查项目", "Exam", (w.pick(("胸部CT平扫", "头颅MRI", "腹部彩超", "冠脉CTA")),))]))
        blocks.append(("section", "影像所见", _body(w, c, 2) + ["双肺纹理增多，未见明确实变影。"]))
        blocks.append(("section", "诊断意见", [_disease(w.pick(c.diseases)), "可能，请结合临床。"]))
        blocks.append(("fields", [_signature(w, d[1], "报告医师"), _signature(w, t[0], "技师")]))
    elif kind == "病理报告":
        blocks.append(("fields", [_record_field(w), _F("送检医师", "Submitted by", (d[2],))]))
        blocks.append(("section", "大体所见", ["送检组织一块，大小2.0×1.5×1.0cm，灰白色。"]))
        blocks.append(("section", "病理诊断", [_disease(w.pick(("乳腺浸润性导管癌", "肺腺癌", "霍奇金淋巴瘤", "甲状腺乳头状癌", "伯基特淋巴瘤"))), "，", "免疫组化：Ki-67（约30%+）。"]))
        blocks.append(("fields", [_signature(w, d[3], "诊断医师"), _signature(w, d[0], "复核医师")]))
    elif kind == "护理记录":
        for _ in range(w.r.randint(2, 4)):
            hh = f"{w.r.randint(0, 23):02d}:{w.r.randint(0, 59):02d}"
            blocks.append(("section", hh, _body(w, c, 2) + _staff_mention(w, c, "nurse") + ["。"]))
            blocks.append(("fields", [_signature(w, w.pick(n), "护士签名")]))
    elif kind == "会诊意见":
        blocks.append(("fields", [_F("申请科室", "From", (_K("department", c.department),)), _F("会诊科室", "To", (_K("department", w.pick(DEPARTMENTS)),)), _F("申请医师", "Req. by", (d[0],))]))
        sec("病情摘要", 3)
        sec("会诊意见", 3)
        blocks.append(("fields", [_signature(w, d[3], "会诊医师")]))
    elif kind == "转诊单":
        blocks.append(("fields", [_F("转出医院", "From", (_K("hospital", c.hospital),)), _F("转入医院", "To", (_K("hospital", w.pick(HOSPITALS)),)), _F("转诊医师", "Referring Dr", (d[0],))]))
        sec("转诊原因", 3)
        blocks.append(("fields", _contact_block(w, c) + [_F("联系电话", "Tel", (_I("landline", w.landline()),))]))
    elif kind == "手术记录":
        blocks.append(("fields", [_F("术者", "Surgeon", (d[0],)), _F("一助", "1st Asst", (d[1],)), _F("二助", "2nd Asst", (d[2],)),
                                  _F("麻醉医师", "Anesth", (d[3],)), _F("器械护士", "Scrub RN", (n[0],)), _F("巡回护士", "Circ RN", (n[1],))]))
        blocks.append(("section", "手术经过", ["患者取平卧位，", *_phrase(w), "在全麻下行腹腔镜胆囊切除术，"] + _body(w, c, 3)))
        blocks.append(("section", "术后", ["术毕患者", _K("phrase", "安返病房"), "，"] + _staff_mention(w, c, "doctor") + ["。"]))
    elif kind == "麻醉记录":
        blocks.append(("fields", [_F("麻醉医师", "Anesthesiologist", (d[3],)), _F("麻醉方式", "Method", ("全身麻醉",)), _F("ASA分级", "ASA", ("Ⅱ级",))]))
        blocks.append(("section", "用药", [*_drug_line(w, "丙泊酚"), "；", *_drug_line(w, "舒芬太尼"), "；", *_drug_line(w, "罗库溴铵"), "。"] + _body(w, c, 1)))
        blocks.append(("fields", [_signature(w, n[0], "麻醉护士"), _signature(w, d[3])]))
    elif kind == "随访记录":
        blocks.append(("fields", [_F("随访方式", "Mode", (w.pick(("电话", "微信", "门诊")),)), _F("随访人", "By", (w.pick(n + d),))]))
        sec("随访内容", 3)
        blocks.append(("fields", _contact_block(w, c)))
    elif kind == "知情同意书":
        blocks.append(("section", "告知", ["本人已知晓", _disease(c.diseases[0]), "手术风险，", *_phrase(w), "同意手术。"] + _relative_sentence(w, c)))
        blocks.append(("fields", [_F("患者签名", "Patient", (c.patient,)), _F("监护人签名", "Guardian", (c.guardian,)),
                                  _F("与患者关系", "Relation", (w.pick(("父子", "母女", "夫妻", "法定监护人")),)),
                                  _F("监护人身份证号", "Guardian ID", (_I("id_card", w.id_card(w.birth(w.r.randint(30, 70), c.visit))),)),
                                  _signature(w, d[0], "谈话医师")]))
    elif kind == "处方":
        lines = []
        for drug in c.drugs:
            lines += ["Rp. ", *_drug_line(w, drug), "\n"]
        blocks.append(("section", "处方", lines))
        blocks.append(("fields", [_signature(w, d[0], "医师"), _signature(w, w.pick(t), "调配"), _signature(w, w.pick(t), "核对"), _F("金额", "Amount", (f"{w.r.randint(10, 900)}.{w.r.randint(0, 99):02d}元",))]))
    elif kind == "体检报告":
        blocks.append(("fields", [_F("工作单位", "Employer", (_I("employer", c.employer),)), _F("体检编号", "Exam No.", (_I("record_number", "TJ" + w.digits(8), form="checkup"),))]))
        blocks.append(("section", "检查结果", sum((_lab(w) + ["；"] for _ in range(4)), []) + _body(w, c, 2)))
        blocks.append(("fields", _contact_block(w, c) + [_signature(w, d[1], "主检医师")]))
    elif kind == "死亡记录":
        blocks.append(("section", "入院情况", intro))
        sec("诊疗经过", 4)
        blocks.append(("section", "死亡原因", [_disease(c.diseases[0]), "，", _disease(w.pick(c.diseases[1:])), "。"]))
        blocks.append(("fields", [_F("家属签字", "Family", (c.relatives[0][1],)), _signature(w, d[0], "记录医师"), _signature(w, d[2], "主任医师")]))
    if w.r.random() < 0.35 and kind not in ("转诊单", "随访记录", "体检报告"):
        blocks.append(("fields", _contact_block(w, c)))
    return blocks


# ---------------------------------------------------------------------------- rendering

class _Render:
    def __init__(self, w: _World, style: str):
        self.w, self.style = w, style
        self.parts: list[str] = []
        self.pos = 0
        self.ids: list[Span] = []
        self.keeps: list[Span] = []

    def _width(self, s: str, p: float) -> str:
        if self.style != "fullwidth":
            return s
        return "".join(FULLWIDTH.get(ch, ch) if self.w.r.random() < p else ch for ch in s)

    def plain(self, s: str) -> None:
        if not s:
            return
        if self.style == "ocr":
            s = "".join(ch + (" " if self.w.r.random() < 0.12 and ch not in "\n" else "") for ch in s)
        s = self._width(s, 0.9)
        self.parts.append(s)
        self.pos += len(s)

    def token(self, tok) -> None:
        if isinstance(tok, str):
            self.plain(tok)
            return
        if isinstance(tok, _I):
            value = self._width(tok.value, 0.95)
            if self.style == "ocr" and tok.kind in ("mobile", "id_card", "bank_card") and self.w.r.random() < 0.2:
                i = self.w.r.randint(2, len(value) - 2)
                value = value[:i] + " " + value[i:]
            span = Span(self.pos, self.pos + len(value), tok.kind, value, tok.role, tok.form)
            self.ids.append(span)
        else:
            value = self._width(tok.value, 0.95)
            self.keeps.append(Span(self.pos, self.pos + len(value), tok.kind, value))
        self.parts.append(value)
        self.pos += len(value)

    def tokens(self, toks) -> None:
        for t in toks:
            self.token(t)

    def label(self, f: _F) -> str:
        if self.style == "english":
            return f.en
        if self.style == "ocr" and self.w.r.random() < 0.3:
            return " ".join(f.zh)
        return f.zh

    def fields(self, fields: list[_F]) -> None:
        w, st = self.w, self.style
        if st == "table":
            sep = w.pick(("｜", "\t", " | "))
            per_row = w.r.randint(1, 3)
            for i, f in enumerate(fields):
                self.plain(self.label(f) + sep)
                self.tokens(f.value)
                self.plain("\n" if (i + 1) % per_row == 0 or i == len(fields) - 1 else sep)
            return
        if st == "narrative":
            for i, f in enumerate(fields):
                self.plain(self.label(f) + w.pick(("", "：", "为")))
                self.tokens(f.value)
                self.plain("。" if i == len(fields) - 1 else "，")
            self.plain("\n")
            return
        colon = {"english": (": ", ":", " "), "ocr": (":", "：", " ", " : ")}.get(st, ("：", "：", ":"))
        for i, f in enumerate(fields):
            self.plain(self.label(f) + w.pick(colon))
            self.tokens(f.value)
            self.plain(w.pick(("\n", "\n", "  ", "\t")) if i < len(fields) - 1 else "\n")

    def heading(self, h: str) -> None:
        if self.style == "english":
            h = {"主诉": "CC", "现病史": "HPI", "诊断": "Dx", "处理": "Plan", "诊疗经过": "Hospital course",
                 "体格检查": "PE", "结果": "Results", "影像所见": "Findings", "诊断意见": "Impression",
                 "手术经过": "Procedure", "随访内容": "F/U", "处方": "Rx"}.get(h, h)
            self.plain(h + ": ")
            return
        self.plain(self.w.pick(("【{}】", "{}：", "{}:\n", "■{}\n")).format(h))


def _english_sprinkle(w: _World, toks: list) -> list:
    extra = [" pt ", " s/p ", " r/o ", "（NPO）", " PRN ", " f/u "]
    return [t if not isinstance(t, str) or w.r.random() > 0.15 else t + w.pick(extra) for t in toks]


def _note(w: _World, idx: int, split: str) -> Note:
    kind = DOCUMENT_KINDS[idx % len(DOCUMENT_KINDS)]
    style = w.pick(STYLES)
    c = _case(w)
    r = _Render(w, style)
    for block in _doc_blocks(w, c, kind):
        if block[0] == "title":
            r.plain(block[1] + "\n")
        elif block[0] == "fields":
            r.fields(block[1])
        else:
            _, h, toks = block
            r.heading(h)
            r.tokens(_english_sprinkle(w, toks) if style == "english" else toks)
            r.plain("\n")
    text = "".join(r.parts)
    return Note(f"{split}-{idx:05d}", kind, style, text, r.ids, r.keeps)


def generate(split: str = "dev", n: int = 600) -> list[Note]:
    """The first n notes of a split; the same split and n always give the same notes."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLIT_SEEDS)}")
    w = _World(SPLIT_SEEDS[split])
    return [_note(w, i, split) for i in range(n)]


def iter_spans(notes: list[Note]) -> Iterator[tuple[Note, Span]]:
    for note in notes:
        for s in note.identifiers:
            yield note, s


def _check(notes: list[Note]) -> None:
    for note in notes:
        for s in note.identifiers + note.ordinary:
            assert note.text[s.start:s.end] == s.text, (note.note_id, s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="dev", choices=sorted(SPLIT_SEEDS))
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--show", action="store_true", help="print the notes with their spans")
    ap.add_argument("--jsonl", help="write notes as JSON lines to this path")
    args = ap.parse_args()
    if args.split != "dev" and args.show:
        raise SystemExit("the eval split is not for reading; measure it once with bench_notes_independent.py")
    notes = generate(args.split, args.n)
    _check(notes)
    if args.jsonl:
        with open(args.jsonl, "w", encoding="utf-8") as fh:
            for note in notes:
                fh.write(json.dumps(asdict(note), ensure_ascii=False) + "\n")
    if args.show:
        for note in notes:
            print(f"=== {note.note_id} {note.document} {note.style}\n{note.text}")
            for s in note.identifiers:
                print(f"  ID {s.kind:15} {s.role or '':10} {s.form or '':15} {s.text!r}")
            for s in note.ordinary:
                print(f"  OK {s.kind:15} {s.text!r}")
    kinds: dict[str, int] = {}
    for _, s in iter_spans(notes):
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    print(f"{len(notes)} notes, mean {sum(len(n.text) for n in notes) / len(notes):.0f} chars; identifiers: "
          + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))


if __name__ == "__main__":
    main()
